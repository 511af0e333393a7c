"""Jinja2 templates and the Python that renders them: board tops, memory images,
constraints, build scripts and HLS C++.  Each template sits beside its renderer."""
