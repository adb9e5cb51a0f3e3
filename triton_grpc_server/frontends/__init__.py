"""Transport frontends: thin handlers over the one data plane."""
