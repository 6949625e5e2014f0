-- Check: pairs whose text is empty or blank (must return no rows).
SELECT pair_id, study_id, organ, text_source
FROM read_parquet($grounded_pairs)
WHERE text IS NULL OR trim(text) = ''
ORDER BY study_id, organ
