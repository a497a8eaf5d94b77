"""The appliance's monitor: machine and program samples, promises, and their page."""
