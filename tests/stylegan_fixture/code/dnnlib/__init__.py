"""The part of dnnlib that network pickles need: a dict with attribute access."""


class EasyDict(dict):
    """A dict whose keys can also be read and written as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]
