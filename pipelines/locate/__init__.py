"""`sare locate` (`locate`: run(LocateConfig), the Localizer that serving replicas share; `sheet`: PNG/HTML; `cli`)."""
