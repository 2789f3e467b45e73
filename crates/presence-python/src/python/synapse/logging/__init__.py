"""`synapse.logging`."""
