-- Named queries: each block becomes a view of that name (pans query DIR @name, or SELECT ... FROM name).
-- `pans stats` prints them in this order. A block is "-- name: X", "-- about: one line", then one SELECT.
-- They read neuron_groups / layer_groups (analysis/named.py): the neurons of finished models
-- (those with a models row), counted per layer and class, with the stored classification or,
-- under --tau, the re-classified one. Percentages are 0-100. Every table keeps config_id, so a
-- folder holding several detection configurations never mixes them.

-- Shared by the pans_by_<layer attribute> queries: PAN counts per configuration and value of `key`
-- (and of `detail`, when given), over the layers' neuron groups. Statements up here run before the
-- named queries are created; only the blocks below become views.
CREATE OR REPLACE MACRO pans_by_layer(key, detail := NULL) AS TABLE
SELECT config_id, key AS value, detail AS detail_value,
       count(DISTINCT (model_id, layer_index))::BIGINT AS layers,
       sum(n)::BIGINT AS neurons,
       count_where(is_pan, n) AS pans,
       pct(count_where(is_pan, n), sum(n)) AS pan_pct,
       pct(count_where(is_pan, n), sum(count_where(is_pan, n)) OVER (PARTITION BY config_id)) AS pct_of_pans
FROM layer_groups
GROUP BY config_id, value, detail_value;

-- name: overview
-- about: One line per configuration: models, families, neurons, PANs, dead and border-informed neurons, failures.
WITH per AS (SELECT * FROM pans_per_model),
fails AS (SELECT config_id, count(*)::BIGINT AS failures FROM failures GROUP BY config_id)
SELECT per.config_id,
       count(*)::BIGINT AS models,
       count(DISTINCT per.family)::BIGINT AS families,
       sum(padded_neurons)::BIGINT AS padded_neurons,
       sum(pans)::BIGINT AS pans,
       pct(sum(pans), sum(padded_neurons)) AS pan_pct_padded,
       median(pan_pct_padded) AS median_model_pan_pct,
       pct(sum(pans) FILTER (WHERE conv_neurons IS NOT NULL), sum(conv_neurons)) AS pan_pct_conv,
       sum(dead)::BIGINT AS dead,
       sum(border_informed)::BIGINT AS border_informed,
       coalesce(any_value(fails.failures), 0)::BIGINT AS failures
FROM per LEFT JOIN fails USING (config_id)
GROUP BY per.config_id
ORDER BY per.config_id;

-- name: pans_per_model
-- about: PANs per model: count, % of padded (measured) neurons, % of all conv neurons; dead and border-informed counts.
WITH g AS (
    SELECT model_id, config_id,
           sum(n)::BIGINT AS padded_neurons,
           count_where(is_pan, n) AS pans,
           count_where(dead, n) AS dead,
           count_where(border_informed, n) AS border_informed
    FROM neuron_groups GROUP BY model_id, config_id
)
SELECT m.model_id, m.config_id, coalesce(m.family, '(unknown)') AS family, m.pretrained,
       coalesce(g.padded_neurons, 0) AS padded_neurons,
       coalesce(g.pans, 0) AS pans,
       pct(coalesce(g.pans, 0), g.padded_neurons) AS pan_pct_padded,
       m.conv_neurons,
       pct(coalesce(g.pans, 0), m.conv_neurons) AS pan_pct_conv,
       coalesce(g.dead, 0) AS dead,
       coalesce(g.border_informed, 0) AS border_informed,
       m.num_params, m.top1
FROM models m LEFT JOIN g USING (model_id, config_id)
ORDER BY m.config_id, pan_pct_padded DESC NULLS LAST, m.model_id;

-- name: pans_vs_null
-- about: PANs per model next to its null twin (same architecture untrained, recalibrated on the probe): counts, %, ratio.
WITH g AS (
    SELECT model_id, config_id, sum(n)::BIGINT AS padded_neurons, count_where(is_pan, n) AS pans
    FROM neuron_groups GROUP BY model_id, config_id
)
SELECT m.model_id, m.config_id, coalesce(m.family, '(unknown)') AS family, m.pretrained,
       coalesce(g.pans, 0) AS pans,
       pct(coalesce(g.pans, 0), g.padded_neurons) AS pan_pct_padded,
       m.null_model_id,
       n.null_pans,
       pct(n.null_pans, n.null_padded_neurons) AS null_pct_padded,
       CASE WHEN n.null_pans IS NOT NULL THEN coalesce(g.pans, 0) / greatest(n.null_pans, 1) END AS ratio_to_null,
       pct(coalesce(g.pans, 0), g.padded_neurons) - pct(n.null_pans, n.null_padded_neurons) AS gap_pct_points
FROM models m
LEFT JOIN g USING (model_id, config_id)
LEFT JOIN null_groups n ON n.null_model_id = m.null_model_id AND n.config_id = m.config_id
ORDER BY m.config_id, ratio_to_null DESC NULLS LAST, m.model_id;

-- name: null_gap
-- about: The gap between PANs and the null across models with a null twin: how many clear 10x max(null, 1), medians.
SELECT config_id,
       count(*)::BIGINT AS models,
       count(null_pans)::BIGINT AS models_with_null,
       sum(pans) FILTER (WHERE null_pans IS NOT NULL)::BIGINT AS pans,
       sum(null_pans)::BIGINT AS null_pans,
       median(ratio_to_null) AS median_ratio,
       count(*) FILTER (WHERE pans >= 10 * greatest(null_pans, 1))::BIGINT AS models_10x_null,
       count(*) FILTER (WHERE pans <= null_pans)::BIGINT AS models_at_or_below_null,
       median(gap_pct_points) AS median_gap_pct_points
FROM pans_vs_null
GROUP BY config_id
ORDER BY config_id;

-- name: pans_by_family
-- about: PANs per architecture family (docs/analysis.md has the rule): pooled % and the spread of per-model %.
SELECT config_id, family,
       count(*)::BIGINT AS models,
       sum(padded_neurons)::BIGINT AS padded_neurons,
       sum(pans)::BIGINT AS pans,
       pct(sum(pans), sum(padded_neurons)) AS pan_pct_padded,
       median(pan_pct_padded) AS median_model_pan_pct,
       min(pan_pct_padded) AS min_model_pan_pct,
       max(pan_pct_padded) AS max_model_pan_pct,
       median(pans) AS median_model_pans
FROM pans_per_model
GROUP BY config_id, family
ORDER BY config_id, pan_pct_padded DESC NULLS LAST, family;

-- name: pans_by_depth
-- about: PANs by relative depth of the layer in its model (deciles of layers.relative_depth).
SELECT config_id,
       coalesce(depth_bin(relative_depth), '(unknown)') AS depth,
       count(DISTINCT (model_id, layer_index))::BIGINT AS layers,
       sum(n)::BIGINT AS neurons,
       count_where(is_pan, n) AS pans,
       pct(count_where(is_pan, n), sum(n)) AS pan_pct,
       pct(count_where(is_pan, n), sum(count_where(is_pan, n)) OVER (PARTITION BY config_id)) AS pct_of_pans,
       count_where(dead, n) AS dead,
       count_where(border_informed, n) AS border_informed
FROM layer_groups
GROUP BY config_id, depth
ORDER BY config_id, depth;

-- name: pans_by_kernel
-- about: PANs by kernel size (kernel_h x kernel_w) of the layer.
SELECT config_id, value AS kernel, layers, neurons, pans, pan_pct, pct_of_pans
FROM pans_by_layer(coalesce(kernel_h || 'x' || kernel_w, '(unknown)'))
ORDER BY config_id, neurons DESC, kernel;

-- name: pans_by_stride
-- about: PANs by stride (stride_h x stride_w) of the layer.
SELECT config_id, value AS stride, layers, neurons, pans, pan_pct, pct_of_pans
FROM pans_by_layer(coalesce(stride_h || 'x' || stride_w, '(unknown)'))
ORDER BY config_id, neurons DESC, stride;

-- name: pans_by_dilation
-- about: PANs by dilation (dilation_h x dilation_w) of the layer.
SELECT config_id, value AS dilation, layers, neurons, pans, pan_pct, pct_of_pans
FROM pans_by_layer(coalesce(dilation_h || 'x' || dilation_w, '(unknown)'))
ORDER BY config_id, neurons DESC, dilation;

-- name: pans_by_padding
-- about: PANs by how the layer is padded (layers.padding_kind) and with what (layers.padding_mode).
SELECT config_id, value AS padding_kind, detail_value AS padding_mode, layers, neurons, pans, pan_pct, pct_of_pans
FROM pans_by_layer(coalesce(padding_kind, '(unknown)'), detail := coalesce(padding_mode, '(unknown)'))
ORDER BY config_id, neurons DESC, padding_kind, padding_mode;

-- name: pans_by_conv_type
-- about: PANs by convolution type (standard, depthwise, grouped).
SELECT config_id, value AS conv_type, layers, neurons, pans, pan_pct, pct_of_pans
FROM pans_by_layer(coalesce(conv_type, '(unknown)'))
ORDER BY config_id, neurons DESC, conv_type;

-- name: pan_types
-- about: PAN types (single side, corner pair, opposite pair, three sides, all four) by sign.
SELECT config_id,
       pan_type(pan_sides) AS pan_type,
       coalesce(pan_sign, '(unknown)') AS pan_sign,
       sum(n)::BIGINT AS pans,
       pct(sum(n), sum(sum(n)) OVER (PARTITION BY config_id)) AS pct_of_pans
FROM neuron_groups
WHERE is_pan
GROUP BY config_id, pan_type, pan_sign
ORDER BY config_id, pans DESC, pan_type, pan_sign;

-- name: pans_by_side
-- about: PANs that respond to each side's padding (a PAN with several sides counts once per side), by sign.
SELECT config_id, side,
       sum(n)::BIGINT AS pans,
       count_where(pan_sign = 'excited', n) AS excited,
       count_where(pan_sign = 'inhibited', n) AS inhibited,
       count_where(pan_sign = 'mixed', n) AS mixed
FROM (SELECT config_id, n, pan_sign, unnest(side_list(pan_sides)) AS side FROM neuron_groups WHERE is_pan)
GROUP BY config_id, side
ORDER BY config_id, list_position(['top', 'bottom', 'left', 'right'], side);

-- name: pan_side_sets
-- about: PANs per exact set of sides (pan_sides), with type and sign counts.
SELECT config_id,
       coalesce(pan_sides, '(unknown)') AS pan_sides,
       pan_type(pan_sides) AS pan_type,
       sum(n)::BIGINT AS pans,
       pct(sum(n), sum(sum(n)) OVER (PARTITION BY config_id)) AS pct_of_pans,
       count_where(pan_sign = 'excited', n) AS excited,
       count_where(pan_sign = 'inhibited', n) AS inhibited,
       count_where(pan_sign = 'mixed', n) AS mixed
FROM neuron_groups
WHERE is_pan
GROUP BY config_id, pan_sides, pan_type
ORDER BY config_id, pans DESC, pan_sides;

-- name: border_response
-- about: Own border response (PANs) versus inherited (border-informed: obs_z high, own_z low), per family and in all.
SELECT config_id,
       CASE WHEN grouping(family) = 1 THEN '(all)' ELSE coalesce(family, '(unknown)') END AS family,
       count(DISTINCT model_id)::BIGINT AS models,
       sum(n)::BIGINT AS padded_neurons,
       count_where(is_pan, n) AS own,
       pct(count_where(is_pan, n), sum(n)) AS own_pct,
       count_where(border_informed, n) AS inherited,
       pct(count_where(border_informed, n), sum(n)) AS inherited_pct,
       count_where(NOT is_pan AND NOT border_informed AND NOT dead, n) AS neither,
       count_where(border_informed, n) / nullif(count_where(is_pan, n), 0) AS inherited_per_own
FROM neuron_groups
GROUP BY config_id, ROLLUP (family)
ORDER BY config_id, grouping(family) DESC, padded_neurons DESC, family;

-- name: dead_neurons
-- about: Dead neurons (interior output nearly constant: never PANs, z-scores meaningless), per family and in all.
SELECT config_id,
       CASE WHEN grouping(family) = 1 THEN '(all)' ELSE family END AS family,
       count(*)::BIGINT AS models,
       count(*) FILTER (WHERE dead > 0)::BIGINT AS models_with_dead,
       sum(padded_neurons)::BIGINT AS padded_neurons,
       sum(dead)::BIGINT AS dead,
       pct(sum(dead), sum(padded_neurons)) AS dead_pct,
       max(pct(dead, padded_neurons)) AS max_model_dead_pct
FROM pans_per_model
GROUP BY config_id, ROLLUP (family)
ORDER BY config_id, grouping(family) DESC, dead DESC, family;

-- name: pans_vs_size
-- about: PAN share by model size (models.num_params): <5M, 5-25M, 25-100M, >=100M parameters.
SELECT config_id,
       CASE WHEN num_params IS NULL THEN '(unknown)'
            WHEN num_params < 5e6 THEN '<5M'
            WHEN num_params < 25e6 THEN '5M-25M'
            WHEN num_params < 100e6 THEN '25M-100M'
            ELSE '>=100M' END AS size,
       count(*)::BIGINT AS models,
       median(num_params) / 1e6 AS median_params_m,
       sum(pans)::BIGINT AS pans,
       pct(sum(pans), sum(padded_neurons)) AS pan_pct_padded,
       median(pan_pct_padded) AS median_model_pan_pct,
       avg(pan_pct_padded) AS mean_model_pan_pct,
       median(top1) AS median_top1
FROM pans_per_model
GROUP BY config_id, size
ORDER BY config_id, min(num_params) NULLS LAST;

-- name: pans_vs_accuracy
-- about: PAN share by ImageNet top-1 (models.top1 in %, a value <= 1 read as a fraction): <70, 70-75, 75-80, 80-85, >=85.
WITH p AS (
    SELECT *, CASE WHEN top1 <= 1 THEN top1 * 100 ELSE top1 END AS top1_pct FROM pans_per_model
)
SELECT config_id,
       CASE WHEN top1_pct IS NULL THEN '(unknown)'
            WHEN top1_pct < 70 THEN '<70'
            WHEN top1_pct < 75 THEN '70-75'
            WHEN top1_pct < 80 THEN '75-80'
            WHEN top1_pct < 85 THEN '80-85'
            ELSE '>=85' END AS top1_range,
       count(*)::BIGINT AS models,
       sum(pans)::BIGINT AS pans,
       pct(sum(pans), sum(padded_neurons)) AS pan_pct_padded,
       median(pan_pct_padded) AS median_model_pan_pct,
       avg(pan_pct_padded) AS mean_model_pan_pct
FROM p
GROUP BY config_id, top1_range
ORDER BY config_id, min(top1_pct) NULLS LAST;

-- name: pan_share_correlations
-- about: Correlation across models of PAN % (of padded neurons) with log10(num_params) and with top1: Pearson and Spearman.
WITH p AS (
    SELECT config_id, pan_pct_padded AS y, 'log10(num_params)' AS against,
           CASE WHEN num_params > 0 THEN log10(num_params) END AS x
    FROM pans_per_model
    UNION ALL
    SELECT config_id, pan_pct_padded, 'top1', top1 FROM pans_per_model
),
r AS (
    SELECT *,
           rank() OVER (PARTITION BY config_id, against ORDER BY x)
             + (count(*) OVER (PARTITION BY config_id, against, x) - 1) / 2.0 AS rx,
           rank() OVER (PARTITION BY config_id, against ORDER BY y)
             + (count(*) OVER (PARTITION BY config_id, against, y) - 1) / 2.0 AS ry
    FROM p WHERE x IS NOT NULL AND y IS NOT NULL
)
SELECT config_id, against, count(*)::BIGINT AS models, corr(y, x) AS pearson, corr(ry, rx) AS spearman
FROM r
GROUP BY config_id, against
ORDER BY config_id, against;

-- name: failures_summary
-- about: Models that failed, by stage and error type, with one example message.
SELECT config_id, stage, error_type,
       count(*)::BIGINT AS failures,
       count(DISTINCT model_id)::BIGINT AS models,
       left(min(message), 160) AS example
FROM failures
GROUP BY config_id, stage, error_type
ORDER BY config_id, failures DESC, stage, error_type;
