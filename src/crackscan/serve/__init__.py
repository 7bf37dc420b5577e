"""The HTTP API and web page: routes, the budgets that keep one client from tying the server
up, and the labelling loop behind the page."""
