-- The database of the recipe searches' Optuna studies (L2L_API_SEARCH_STORAGE_URL in compose.yaml),
-- beside mlflow's own: Optuna and MLflow both keep an alembic_version table, so they cannot share one.
CREATE DATABASE l2l_search;
