"""The caseworker page: one citizen's chance, what lies behind it and what could move it, served by
the prediction service itself (mounted with `@bentoml.asgi_app(create_app(...), path=PAGE_PATH)`).

Server-rendered HTML (Jinja2) with inline SVG charts laid out in Python (`charts`), each chart followed by
a table of the same numbers: nothing loads from the network, the page works without JavaScript and
with the keyboard alone. The chance comes from the service's own model through the same `score`
call as POST /predict, so page and API show the same number; every view is audited with who saw it.

Routes under the mount path (Danish by default, `?lang=en` for English); who may call each is
`serving.access.RULES` (caseworkers for citizens, scoped to their job centres):
    GET  /login, POST /login  sign in (built-in accounts; behind SSO the proxy signs in)
    POST /logout              sign out
    GET  /                    find a citizen of your job centres by the start of their pseudonymous id (`?q=`)
    GET  /citizen/{id}        the citizen's page (404 unknown or not yours, 503 no model loaded)
    POST /assessments         record your assessment of the view's score (form + form token), then back
    GET  /model               what the model is trained on and how accurate it is
    GET  /static/...          the style sheet
The POST bodies are HTML forms (application/x-www-form-urlencoded), at most MAX_FORM_BYTES.

Modules: `app` (create_app and the routes), `charts` (SVG geometry), `forms` (reading the forms),
`text` (the page's words and number formatting). The what-if behind "what
could move it" is `serving.core.step_ups`; the domain labels come from `features.catalogue`.
"""

from serving.page.app import PAGE_PATH, PageContext, create_app

__all__ = ["PAGE_PATH", "PageContext", "create_app"]
