CREATE TABLE "egress_audit" (
	"company_id" text NOT NULL,
	"heartbeat_run_id" text NOT NULL,
	"lease_id" text NOT NULL,
	"environment_id" text NOT NULL,
	"phase" text NOT NULL,
	"host" text NOT NULL,
	"port" integer NOT NULL,
	"verdict" text NOT NULL,
	"reason" text DEFAULT '' NOT NULL,
	"connections" bigint DEFAULT 0 NOT NULL,
	"bytes_up" bigint DEFAULT 0 NOT NULL,
	"bytes_down" bigint DEFAULT 0 NOT NULL,
	"first_at" timestamp with time zone NOT NULL,
	"last_at" timestamp with time zone NOT NULL,
	CONSTRAINT "egress_audit_lease_id_phase_host_port_verdict_reason_pk" PRIMARY KEY("lease_id","phase","host","port","verdict","reason")
);
--> statement-breakpoint
CREATE INDEX "egress_audit_run" ON "egress_audit" USING btree ("company_id","heartbeat_run_id");