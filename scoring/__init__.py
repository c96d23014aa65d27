"""One worker's data path: datasets, decoding, the overlapped pipeline, outputs and reports."""
