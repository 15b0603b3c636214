"""Stand-in for PythonQt's ``ctk`` (Qt cannot run in pytest); the module only needs to import."""
