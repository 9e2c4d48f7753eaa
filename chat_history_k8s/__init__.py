"""chat-history-k8s: a stateless LangChain chat service whose history lives outside the process."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chat-history-k8s")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
