"""Static files of the browser control panel (served by gateway.web_routes); a package only so that
the assets ship with the wheel as package data."""
