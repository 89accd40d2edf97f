-- Named queries the report draws from (pans report), beside those of stats.sql: the same block format,
-- also views (pans query DIR @NAME, SELECT ... FROM NAME) and listed by pans query DIR --list, but not
-- printed by pans stats (some are long lists: every PAN, every failure). Every one keeps config_id:
-- the report reads one configuration.

-- name: detection_settings
-- about: The detection settings of each configuration: probe, images, input size, tau, reference, detector version.
SELECT config_id, any_value(probe) AS probe, any_value(num_images) AS num_images,
       any_value(image_h) AS image_h, any_value(image_w) AS image_w,
       any_value(tau) AS tau, any_value(reference) AS reference,
       any_value(detector_version) AS detector_version
FROM models
GROUP BY config_id
ORDER BY config_id;

-- name: family_models
-- about: Models per architecture family (those with layer results), most models first.
SELECT config_id, family, count(DISTINCT model_id) AS models
FROM layer_groups
GROUP BY config_id, family
ORDER BY config_id, models DESC, family;

-- name: pans_by_family_depth
-- about: PAN share (% of neurons) by relative depth of the layer (deciles) within each architecture family.
SELECT config_id, family, depth_bin(relative_depth) AS depth, pct(count_where(is_pan, n), sum(n)) AS pan_pct
FROM layer_groups
WHERE relative_depth IS NOT NULL
GROUP BY ALL
ORDER BY config_id, family, depth;

-- name: strongest_pans
-- about: Every PAN by strength (largest |own_z|; model_rank within its model), with its kernel and padded weight mass per side.
WITH s AS (
    SELECT model_id, config_id, layer, layer_index, channel, pan_sides, pan_sign, kernel,
           kmass_top, kmass_bottom, kmass_left, kmass_right,
           own_strength(own_z_top, own_z_bottom, own_z_left, own_z_right) AS strength
    FROM neurons_classified
    WHERE is_pan
),
p AS (
    SELECT *, row_number() OVER (PARTITION BY config_id, model_id ORDER BY strength DESC, layer_index, channel)
              AS model_rank
    FROM s
)
SELECT p.*, l.kernel_h, l.kernel_w
FROM p LEFT JOIN (SELECT DISTINCT ON (model_id, config_id, layer_index) * FROM layers) l
  USING (model_id, config_id, layer_index)
ORDER BY config_id, strength DESC, model_id, layer_index, channel;

-- name: pan_border_profiles
-- about: Mean own_z and obs_z per side over the 200 strongest PANs of each side set and sign (the report's border images).
WITH p AS (
    SELECT config_id, pan_sides, pan_sign, own_z_top, own_z_bottom, own_z_left, own_z_right,
           obs_z_top, obs_z_bottom, obs_z_left, obs_z_right,
           own_strength(own_z_top, own_z_bottom, own_z_left, own_z_right) AS strength
    FROM neurons_classified WHERE is_pan
),
g AS (SELECT config_id, pan_sides, pan_sign, count(*) AS pans FROM p GROUP BY ALL),
r AS (SELECT p.*, g.pans,
             row_number() OVER (PARTITION BY p.config_id, p.pan_sides, p.pan_sign ORDER BY strength DESC) AS rk
      FROM p JOIN g ON p.config_id = g.config_id
                   AND p.pan_sides IS NOT DISTINCT FROM g.pan_sides
                   AND p.pan_sign IS NOT DISTINCT FROM g.pan_sign)
SELECT config_id, pan_sides, pan_sign, any_value(pans) AS pans, count(*) AS averaged,
       avg(nan_null(own_z_top)) AS own_top, avg(nan_null(own_z_bottom)) AS own_bottom,
       avg(nan_null(own_z_left)) AS own_left, avg(nan_null(own_z_right)) AS own_right,
       avg(nan_null(obs_z_top)) AS obs_top, avg(nan_null(obs_z_bottom)) AS obs_bottom,
       avg(nan_null(obs_z_left)) AS obs_left, avg(nan_null(obs_z_right)) AS obs_right
FROM r WHERE rk <= 200
GROUP BY config_id, pan_sides, pan_sign
ORDER BY config_id, pans DESC, pan_sides, pan_sign;

-- name: failed_models
-- about: Every failed model: stage, error type, the start of its message, attempt, when.
SELECT config_id, model_id, stage, error_type, left(message, 240) AS message, attempt, created_at
FROM failures
ORDER BY config_id, stage, error_type, model_id;

-- name: impact_metrics
-- about: Each impact metric per experiment and condition, over models: mean, spread and range.
SELECT config_id, experiment, condition, metric,
       count(DISTINCT model_id)::BIGINT AS models, count(*)::BIGINT AS rows,
       avg(value) AS mean, stddev_samp(value) AS std, min(value) AS min, max(value) AS max
FROM impact
GROUP BY ALL
ORDER BY config_id, experiment, metric, condition;

-- name: impact_per_model
-- about: Per model and impact settings: PANs, accuracy, PAN ablation against its controls, padding swaps.
PIVOT (SELECT config_id, model_id, impact_id, condition || '.' || metric AS measure, value FROM impact)
ON measure IN (
  'intact.pans' AS pans, 'intact.images' AS images, 'intact.accuracy' AS accuracy,
  'pan_ablation.top1_agreement' AS pan_agreement, 'pan_ablation.kl' AS pan_kl, 'pan_ablation.accuracy' AS pan_accuracy,
  'pan_vs_control.kl_control_mean' AS control_kl_mean, 'pan_vs_control.kl_control_std' AS control_kl_std,
  'pan_vs_control.kl_z' AS kl_z, 'pan_vs_control.kl_percentile' AS kl_percentile,
  'reflect.top1_agreement' AS reflect_agreement, 'replicate.top1_agreement' AS replicate_agreement,
  'circular.top1_agreement' AS circular_agreement
)
USING max(value)
GROUP BY config_id, model_id, impact_id
ORDER BY config_id, model_id, impact_id;

-- name: impact_class_shifts
-- about: The five classes whose mean probability moves most under each impact condition (controls left out).
SELECT config_id, model_id, impact_id, condition, class_index, class_name, count_delta, prob_delta
FROM (
  SELECT *, row_number() OVER (PARTITION BY config_id, model_id, impact_id, condition
                               ORDER BY abs(prob_delta) DESC) AS rk
  FROM impact_classes WHERE experiment <> 'control'
)
WHERE rk <= 5
ORDER BY config_id, model_id, impact_id, condition, prob_delta DESC;
