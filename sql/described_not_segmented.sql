-- Organs that reports describe but the segmentation does not contain, most frequent first.
SELECT organ, count(*) AS studies, count(*) FILTER (WHERE status = 'abnormal') AS abnormal
FROM read_parquet($pair_exclusions)
WHERE reason = 'described_not_segmented'
GROUP BY organ
ORDER BY studies DESC, organ
