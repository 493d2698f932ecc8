"""``Client`` methods: the model registry: models and their versions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from stalwart.client._base import ClientBase, ModelOrderBy, _model_path
from stalwart.client.models import (
    Model,
    ModelPage,
    ModelVersion,
    ModelVersionPage,
    Page,
)


class Registry(ClientBase):
    """The model registry: models and their versions."""

    # --- model registry -----------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        description: str = "",
        labels: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        project_id: int | None = None,
    ) -> Model:
        """Add a model to the registry; ``ConflictError`` if the name is taken.

        ``project_id`` defaults to the master's "Uncategorized" project.

        Example::

            Client().create_model("resnet", description="ImageNet classifier", labels=["vision"])
        """
        body: dict[str, Any] = {
            "name": name,
            "description": description,
            "labels": list(labels),
            "metadata": dict(metadata or {}),
        }
        if project_id is not None:
            body["project_id"] = project_id
        return Model.from_json(self._json("POST", "/api/v1/models", json=body))

    def list_models(
        self,
        *,
        name: str | None = None,
        labels: Iterable[str] | None = None,
        owner: str | None = None,
        order_by: ModelOrderBy | None = None,
        order: Literal["asc", "desc"] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        workspace_id: int | None = None,
        project_id: int | None = None,
    ) -> ModelPage:
        """One page of models, by name unless ``order_by`` says otherwise; ``name`` is a substring.

        Example::

            page = Client().list_models(labels=["vision"])
            print([m.name for m in page.items])
        """
        params: dict[str, Any] = {
            "name": name,
            "label": list(labels or ()),
            "owner": owner,
            "order_by": order_by,
            "order": order,
            "limit": limit,
            "offset": offset,
            "workspace_id": workspace_id,
            "project_id": project_id,
        }
        return Page.parse(self._json("GET", "/api/v1/models", params=params), Model.from_json)

    def get_model(self, name: str) -> Model:
        """One model by name.

        Example::

            print(Client().get_model("resnet").num_versions)
        """
        return Model.from_json(self._json("GET", _model_path(name)))

    def patch_model(
        self,
        name: str,
        *,
        description: str | None = None,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Model:
        """Change the description, replace the labels, or merge ``metadata`` into the stored one at
        the top level (a key set to None is removed); None leaves a field as it is.

        Example::

            Client().patch_model("resnet", metadata={"dataset": "imagenet-21k", "draft": None})
        """
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if labels is not None:
            body["labels"] = list(labels)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return Model.from_json(self._json("PATCH", _model_path(name), json=body))

    def register_model_version(
        self,
        name: str,
        checkpoint_uuid: str,
        *,
        comment: str = "",
        labels: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Register a COMPLETED checkpoint as the model's next version; it is then kept from GC
        and deletion. ``ConflictError`` if the checkpoint is not COMPLETED.

        Example::

            v = Client().register_model_version("resnet", uuid, comment="val_acc 0.91")
            print(v.version)
        """
        body = {
            "checkpoint_uuid": checkpoint_uuid,
            "comment": comment,
            "labels": list(labels),
            "metadata": dict(metadata or {}),
        }
        return ModelVersion.from_json(self._json("POST", f"{_model_path(name)}/versions", json=body))

    def list_model_versions(
        self, name: str, *, limit: int | None = None, offset: int | None = None
    ) -> ModelVersionPage:
        """One page of the model's versions, oldest first.

        Example::

            latest = Client().list_model_versions("resnet").items[-1]
        """
        params = {"limit": limit, "offset": offset}
        return Page.parse(
            self._json("GET", f"{_model_path(name)}/versions", params=params), ModelVersion.from_json
        )

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """One version of a model.

        Example::

            uuid = Client().get_model_version("resnet", 3).checkpoint_uuid
        """
        return ModelVersion.from_json(self._json("GET", f"{_model_path(name)}/versions/{version}"))

    # --- deleting from the model registry -----------------------------------------------------

    def delete_model(self, name: str) -> None:
        """Delete a model with all its versions; their checkpoints become deletable again.

        Example::

            Client().delete_model("resnet")
        """
        self._session.request("DELETE", _model_path(name))

    def delete_model_version(self, name: str, version: int) -> None:
        """Delete one version; its checkpoint is no longer protected from GC by it.

        Example::

            Client().delete_model_version("resnet", 3)
        """
        self._session.request("DELETE", f"{_model_path(name)}/versions/{int(version)}")
