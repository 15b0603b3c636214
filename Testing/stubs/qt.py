"""Stand-in for PythonQt's ``qt`` (Qt cannot run in pytest); the module only needs to import."""
