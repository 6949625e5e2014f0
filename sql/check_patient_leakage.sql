-- Check: patients that appear in more than one split (must return no rows).
SELECT patient_id, list(DISTINCT split ORDER BY split) AS splits, count(DISTINCT study_id) AS studies
FROM read_parquet($grounded_pairs)
GROUP BY patient_id
HAVING count(DISTINCT split) > 1
ORDER BY patient_id
