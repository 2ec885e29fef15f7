"""How the runtime reaches models.

- :mod:`orchestra.backends.base`: the :class:`~orchestra.backends.base.Backend` protocol and
  the request/reply types.
- :mod:`orchestra.backends.litellm_client`: the real backend; every call goes through litellm.
- :mod:`orchestra.backends.pricing`: prices from litellm's local cost map.
- :mod:`orchestra.backends.local`: embedded llama.cpp models served as the litellm provider
  ``local`` (``local/smollm2-135m-instruct``, ``local/gemma-3-270m``).

Nothing is imported here, so that importing one backend does not import the others (litellm,
llama.cpp).
"""
