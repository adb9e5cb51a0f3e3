"""Several server processes on the same ports: the supervisor and what workers share."""
