"""`sare serve`: the localiser on Ray Serve (`app`: the deployment and its HTTP routes, page.html; `service`: start/run(ServeConfig); `cli`)."""
