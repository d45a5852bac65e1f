# A script that is shipped but never imported by discovery.
import definitely_not_installed_client_lib  # noqa: F401
