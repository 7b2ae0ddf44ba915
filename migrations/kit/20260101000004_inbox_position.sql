-- How far each consumer has applied each partition, read by the lag monitor (kit `lag.rs`)
-- every probe: the inbox row is written in the transaction that applied the record, so this
-- holds even for records applied just before a crash whose offsets Kafka never got.
CREATE INDEX kit_inbox_position ON kit_inbox (consumer, topic, kafka_partition, kafka_offset);
