-- The service's own databases beside mlflow's (compose.yaml): the job store (L2L_API_DATABASE_URL)
-- and the recipe searches' Optuna studies (L2L_API_SEARCH_STORAGE_URL). Optuna and MLflow both
-- keep an alembic_version table, so they cannot share one database; the jobs get theirs too.
CREATE DATABASE l2l_jobs;
CREATE DATABASE l2l_search;
