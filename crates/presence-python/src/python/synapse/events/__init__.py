"""`synapse.events`."""
