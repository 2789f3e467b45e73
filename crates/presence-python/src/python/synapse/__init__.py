"""Presenced's compatibility package for modules written for the reference homeserver.

Only what presence router modules use is here: the presence state record, the presence
router constants, the configuration error, the user ID type and the `ModuleApi` members that
routers call. Everything is served from memory by Presenced; nothing of the reference
homeserver itself runs.
"""
