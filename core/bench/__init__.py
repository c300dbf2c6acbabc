"""The benchmark: harness (benchmark), workers, inputs, measurement, HTTP serving, browser row, reports."""
