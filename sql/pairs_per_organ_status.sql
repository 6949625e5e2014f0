-- Grounded pairs per organ and status, with how many came from the report vs the normal template.
SELECT organ, status, text_source, count(*) AS pairs
FROM read_parquet($grounded_pairs)
GROUP BY organ, status, text_source
ORDER BY organ, status, text_source
