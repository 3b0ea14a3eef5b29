"""The line after deployment: drift checks of incoming batches."""
