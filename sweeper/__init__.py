"""The Ray Tune side of invae-sweep: sweep spec, driver, replicate analysis, reports and CLIs."""
