-- Studies with at least $min_pairs grounded pairs (k), per split.
SELECT split, count(*) AS studies
FROM (
    SELECT study_id, any_value(split) AS split, count(*) AS n
    FROM read_parquet($grounded_pairs)
    GROUP BY study_id
)
WHERE n >= $min_pairs
GROUP BY split
ORDER BY split
