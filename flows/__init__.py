"""Prefect flows (`pipeline`), schedules (`serve`) and the `healthgym` command line (`cli`): wiring only."""

import warnings

# Prefect validates flow parameters through a pydantic model; a parameter named `schema` (a public
# name of the flows and their deployments) shadows pydantic's deprecated BaseModel.schema(), which
# nothing here calls: the warning says nothing a user can act on.
warnings.filterwarnings("ignore", message=r'Field name "schema" in ".*" shadows an attribute in parent', category=UserWarning)
