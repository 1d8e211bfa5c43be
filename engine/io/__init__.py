"""Moving data in and out: demo data now; import and export later."""
