"""Image-side code: everything that runs inside a worker."""
