"""What every stage shares: records, reasons, rows, shards and their index, configs, accounting, job state."""
