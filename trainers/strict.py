"""`Strict`: the base of every user-written config model, so that an unknown (misspelt) field is an error."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
