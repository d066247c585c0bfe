"""Helpers the tests of trained methods share."""


def base_state(method) -> dict:
    """A copy of the backbone's base weights (concept tokens detached first)."""
    from unifybench.models.concept_tokens import detach
    detach(method.backbone)
    return {k: v.detach().clone() for k, v in method.backbone.model.state_dict().items()}
