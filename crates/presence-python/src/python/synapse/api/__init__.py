"""`synapse.api`: constants, errors and the presence record."""
