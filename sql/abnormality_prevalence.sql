-- How often each abnormality is paired, per organ, as a share of that organ's pairs.
WITH organ_pairs AS (
    SELECT organ, count(*) AS n FROM read_parquet($grounded_pairs) GROUP BY organ
)
SELECT a.organ, a.abnormality, count(*) AS pairs, round(count(*) / any_value(o.n), 4) AS prevalence
FROM read_parquet($abnormality_pairs) AS a
JOIN organ_pairs AS o USING (organ)
GROUP BY a.organ, a.abnormality
ORDER BY pairs DESC, a.organ, a.abnormality
