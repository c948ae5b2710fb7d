"""JSON handlers, one module per resource; the route table lives in `table`."""
