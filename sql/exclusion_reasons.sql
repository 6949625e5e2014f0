-- Why organs were not paired, by reason.
SELECT reason, count(*) AS organs, count(DISTINCT study_id) AS studies
FROM read_parquet($pair_exclusions)
GROUP BY reason
ORDER BY organs DESC
