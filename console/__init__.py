"""The support console: one aiohttp process (python -m console, SIYU_CONSOLE_PORT) serving staff
pages under /desk/ and the JSON API under /api/ that the pages use. Login, roles, CSRF and live
updates live here; the desk's rules live in desk/."""
