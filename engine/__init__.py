"""blueprint-crm: a low-code CRM engine driven by YAML blueprints."""
