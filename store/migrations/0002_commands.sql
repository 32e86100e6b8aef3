CREATE TABLE "command_input" (
	"command_key" uuid NOT NULL,
	"seq" integer NOT NULL,
	"data" "bytea" NOT NULL,
	"eof" boolean DEFAULT false NOT NULL,
	CONSTRAINT "command_input_command_key_seq_pk" PRIMARY KEY("command_key","seq")
);
--> statement-breakpoint
CREATE TABLE "command_output" (
	"command_key" uuid NOT NULL,
	"seq" integer NOT NULL,
	"stream" smallint NOT NULL,
	"data" "bytea" NOT NULL,
	CONSTRAINT "command_output_command_key_seq_pk" PRIMARY KEY("command_key","seq")
);
--> statement-breakpoint
CREATE TABLE "commands" (
	"key" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"company_id" text NOT NULL,
	"heartbeat_run_id" text NOT NULL,
	"command_id" text NOT NULL,
	"lease_id" uuid,
	"host_id" text,
	"command" text NOT NULL,
	"args" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"status" text DEFAULT 'running' NOT NULL,
	"exit_code" integer,
	"signal" text,
	"timed_out" boolean DEFAULT false NOT NULL,
	"stdout_bytes" bigint DEFAULT 0 NOT NULL,
	"stderr_bytes" bigint DEFAULT 0 NOT NULL,
	"kept_bytes" bigint DEFAULT 0 NOT NULL,
	"truncated" boolean DEFAULT false NOT NULL,
	"kill_signal" text,
	"error" text,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"ended_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "command_input" ADD CONSTRAINT "command_input_command_key_commands_key_fk" FOREIGN KEY ("command_key") REFERENCES "public"."commands"("key") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "command_output" ADD CONSTRAINT "command_output_command_key_commands_key_fk" FOREIGN KEY ("command_key") REFERENCES "public"."commands"("key") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "commands_run_command" ON "commands" USING btree ("company_id","heartbeat_run_id","command_id");--> statement-breakpoint
CREATE INDEX "commands_run_started" ON "commands" USING btree ("company_id","heartbeat_run_id","started_at");--> statement-breakpoint
CREATE INDEX "commands_lease" ON "commands" USING btree ("lease_id");