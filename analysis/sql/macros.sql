-- Macros over the results views. Loaded by analysis.named.install(); documented in docs/analysis.md.

-- |z| with NaN read as NULL (DuckDB orders NaN above every number, so NaN >= threshold would be true).
CREATE MACRO abs_z(x) AS CASE WHEN isnan(x) THEN NULL ELSE abs(x) END;

-- Count of rows (or of summed weights n) where cond holds, as BIGINT (plain sum() gives HUGEINT).
CREATE MACRO count_where(cond, n) AS coalesce(sum(CASE WHEN cond THEN n ELSE 0 END), 0)::BIGINT;

-- Percentage num/den, NULL when den is 0 or NULL.
CREATE MACRO pct(num, den) AS CASE WHEN den > 0 THEN 100.0 * num / den END;

-- The sides in a pan_sides label ('top+left' -> ['top', 'left']); 'all' means all four.
CREATE MACRO side_list(sides) AS
    CASE WHEN sides = 'all' THEN ['top', 'bottom', 'left', 'right'] ELSE string_split(sides, '+') END;

-- PAN type from a pan_sides label: single side, corner pair, opposite pair, three sides, all four.
CREATE MACRO pan_type(sides) AS
    CASE
        WHEN sides IS NULL OR sides = '' THEN NULL
        WHEN len(side_list(sides)) = 1 THEN 'single side'
        WHEN len(side_list(sides)) = 2 THEN
            CASE WHEN list_sort(side_list(sides)) IN (['bottom', 'top'], ['left', 'right'])
                 THEN 'opposite pair' ELSE 'corner pair' END
        WHEN len(side_list(sides)) = 3 THEN 'three sides'
        ELSE 'all four'
    END;

-- Relative depth bin label, deciles: 0.0-0.1 ... 0.9-1.0 (depth 1.0 falls in the last bin). The 1e-6
-- puts a float32-stored 0.7 (0.69999999) in 0.7-0.8, where the exact fraction 7/10 belongs.
CREATE MACRO depth_decile(d) AS least(floor(d::DOUBLE * 10 + 1e-6), 9)::INT;
CREATE MACRO depth_bin(d) AS
    CASE WHEN d IS NULL OR isnan(d) THEN NULL
         ELSE printf('%.1f-%.1f', depth_decile(d) / 10, depth_decile(d) / 10 + 0.1) END;

-- The neurons, re-classified at a threshold (tau) from the stored own_z_* / obs_z_* columns, with the
-- detector's rule (pipeline/detect/classify.py; tests/test_detect_rule.py checks this macro against it on
-- detector output): PAN = pan_rule 'constant' (a zeros/constant-padding layer), not dead and max over
-- sides |own_z| >= threshold; sides '+'-joined in the order top, bottom, left, right; sign excited /
-- inhibited / mixed; border_informed = not dead, not a PAN, max |obs_z| >= threshold. A NULL pan_rule
-- (a folder written before detector 1.2) counts as 'constant': such folders are re-counted as written.
CREATE MACRO pan_rule_counts(rule) AS coalesce(rule, 'constant') = 'constant';

CREATE MACRO pans_at(threshold) AS TABLE
    WITH z AS (
        SELECT *,
            coalesce(dead, false) AS _dead,
            greatest(abs_z(own_z_top), abs_z(own_z_bottom), abs_z(own_z_left), abs_z(own_z_right)) AS _own,
            greatest(abs_z(obs_z_top), abs_z(obs_z_bottom), abs_z(obs_z_left), abs_z(obs_z_right)) AS _obs,
            (coalesce(abs_z(own_z_top) >= threshold AND own_z_top > 0, false)::INT
             + coalesce(abs_z(own_z_bottom) >= threshold AND own_z_bottom > 0, false)::INT
             + coalesce(abs_z(own_z_left) >= threshold AND own_z_left > 0, false)::INT
             + coalesce(abs_z(own_z_right) >= threshold AND own_z_right > 0, false)::INT) AS _up,
            (coalesce(abs_z(own_z_top) >= threshold AND own_z_top <= 0, false)::INT
             + coalesce(abs_z(own_z_bottom) >= threshold AND own_z_bottom <= 0, false)::INT
             + coalesce(abs_z(own_z_left) >= threshold AND own_z_left <= 0, false)::INT
             + coalesce(abs_z(own_z_right) >= threshold AND own_z_right <= 0, false)::INT) AS _down
        FROM neurons
    ),
    c AS (SELECT *, (NOT _dead AND pan_rule_counts(pan_rule) AND coalesce(_own >= threshold, false)) AS _pan FROM z)
    SELECT * EXCLUDE (_dead, _own, _obs, _up, _down, _pan) REPLACE (
        _pan AS is_pan,
        CASE WHEN _pan THEN concat_ws('+',
            CASE WHEN abs_z(own_z_top) >= threshold THEN 'top' END,
            CASE WHEN abs_z(own_z_bottom) >= threshold THEN 'bottom' END,
            CASE WHEN abs_z(own_z_left) >= threshold THEN 'left' END,
            CASE WHEN abs_z(own_z_right) >= threshold THEN 'right' END) END AS pan_sides,
        CASE WHEN NOT _pan THEN NULL
             WHEN _down = 0 THEN 'excited'
             WHEN _up = 0 THEN 'inhibited'
             ELSE 'mixed' END AS pan_sign,
        (NOT _dead AND NOT _pan AND coalesce(_obs >= threshold, false)) AS border_informed
    )
    FROM c;

-- PANs per model and configuration at a threshold (a quick re-count; see also pans stats --tau).
CREATE MACRO pans_per_model_at(threshold) AS TABLE
    SELECT n.model_id, n.config_id, any_value(m.family) AS family,
           count(*)::BIGINT AS padded_neurons,
           count_where(n.is_pan, 1) AS pans,
           pct(count_where(n.is_pan, 1), count(*)) AS pan_pct_padded,
           pct(count_where(n.is_pan, 1), any_value(m.conv_neurons)) AS pan_pct_conv
    FROM pans_at(threshold) n JOIN models m USING (model_id, config_id)
    GROUP BY n.model_id, n.config_id
    ORDER BY pan_pct_padded DESC NULLS LAST, n.model_id;

-- PAN counts per configuration at each threshold of a list: a calibration sweep,
-- e.g. SELECT * FROM pan_count_sweep([2, 3, 4, 6, 8]).
CREATE MACRO pan_count_sweep(taus) AS TABLE
    WITH z AS (
        SELECT n.config_id,
               CASE WHEN coalesce(n.dead, false) OR NOT pan_rule_counts(n.pan_rule) THEN NULL
                    ELSE greatest(abs_z(own_z_top), abs_z(own_z_bottom), abs_z(own_z_left), abs_z(own_z_right)) END AS own
        FROM neurons n SEMI JOIN models m USING (model_id, config_id)
    )
    SELECT config_id, t.tau, count(*)::BIGINT AS padded_neurons,
           count_where(own >= t.tau, 1) AS pans,
           pct(count_where(own >= t.tau, 1), count(*)) AS pan_pct_padded
    FROM z, (SELECT unnest(taus) AS tau) t
    GROUP BY config_id, t.tau
    ORDER BY config_id, t.tau;

-- x with NaN read as NULL, for averages over z-scores.
CREATE MACRO nan_null(x) AS CASE WHEN isnan(x) THEN NULL ELSE x END;

-- The strongest own padding response of a neuron row: max over sides of |own_z| (NaN/NULL sides skipped).
CREATE MACRO own_strength(own_z_top, own_z_bottom, own_z_left, own_z_right) AS
    greatest(abs_z(own_z_top), abs_z(own_z_bottom), abs_z(own_z_left), abs_z(own_z_right));
