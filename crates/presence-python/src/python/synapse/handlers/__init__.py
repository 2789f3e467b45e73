"""`synapse.handlers`."""
