"""BGP announcement of the VIPs through BIRD 2: the request's checks (bgpspec), the configuration
text (birdconf) and BIRD's own tools (bird). Imports only the engine's errors and validate."""
