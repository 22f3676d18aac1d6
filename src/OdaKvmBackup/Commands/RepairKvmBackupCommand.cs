using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Recovery after a killed process, a host reboot or a commit that could not finish: puts domains left on this
/// module's overlays back on their own disks, pivots leftover jobs, clears leftover metadata, removes the run's
/// overlays once no disk uses them, and closes the interrupted run's journal. What the journal does not record
/// (a backup by hand with the same names) is only reported, unless -IncludeUnrecorded.
/// </summary>
[Cmdlet(VerbsDiagnostic.Repair, "KvmBackup", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(RepairAction))]
public sealed class RepairKvmBackupCommand : KvmCmdlet
{
    private readonly List<string> _names = new();

    // No "Name" alias: bound by property name, it would take the Name of any object (a file from Get-ChildItem).
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(Completion.DomainNameCompleter))]
    public string[]? DomainName { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string SnapshotName { get; set; } = BackupNames.DefaultSnapshotName;

    /// <summary>Where leftover overlays that no disk uses any more are moved; without it they are deleted.</summary>
    [Parameter]
    public string? RetentionPath { get; set; }

    /// <summary>Also acts on overlays, jobs and metadata that OdaKvmBackup has no record of (a backup run by hand).</summary>
    [Parameter]
    public SwitchParameter IncludeUnrecorded { get; set; }

    protected override void Begin()
    {
        try
        {
            BackupNames.RequireValidSnapshotName(SnapshotName); // the rule New-KvmDiskSnapshot applies
        }
        catch (BackupException ex)
        {
            ThrowTerminatingError(ToErrorRecord(ex));
            return;
        }
        if (RetentionPath is not null)
            RetentionPath = ResolveWritableFolder(RetentionPath, nameof(RetentionPath));
    }

    protected override void ProcessRecord()
    {
        foreach (var name in ExpandDomainNames(DomainName ?? []))
        {
            if (!_names.Contains(name, StringComparer.Ordinal))
                _names.Add(name); // piped Get-VmDisk output names each domain once per disk
        }
    }

    protected override void EndProcessing()
    {
        if (DomainName is not null && _names.Count == 0)
            return; // only blank names were given: each was reported
        var service = new RepairService(Tools, NewCommitService(), location => BackupStores.Open(location, Runner));
        IReadOnlyList<string> domains;
        try
        {
            domains = Run(ct => service.DomainsToInspectAsync(_names, ct));
        }
        catch (BackupException ex)
        {
            ThrowTerminatingError(ToErrorRecord(ex));
            return;
        }
        foreach (var domain in domains)
            RepairDomain(service, domain);
    }

    private void RepairDomain(RepairService service, string domain)
    {
        DomainLock? domainLock;
        try
        {
            domainLock = DomainLock.TryAcquire(domain);
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, domain));
            return;
        }
        using var held = domainLock;
        if (domainLock is null)
        {
            WriteError(ToErrorRecord(RunErrors.BackupInProgress(domain), domain));
            return;
        }
        IReadOnlyList<RepairFinding> findings;
        try
        {
            findings = Run(ct => service.InspectAsync(domain, SnapshotName, ct));
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, domain));
            return;
        }
        if (findings.Count == 0)
        {
            WriteVerbose($"'{domain}': nothing to repair.");
            return;
        }
        var commitFailed = false;
        foreach (var (finding, leftAlone) in RepairService.Decide(findings, IncludeUnrecorded))
        {
            var what = finding.Subject;
            if (leftAlone is not null)
            {
                WriteWarning(leftAlone);
                continue;
            }
            if (finding.Kind == RepairKind.CloseJournal && commitFailed)
                continue; // the journal is the record of what is still on overlays: keep it
            var action = finding.Kind == RepairKind.RemoveLeftoverOverlay
                ? RetentionPath is null ? $"{finding.Problem}: delete it (its data is in the disk)" : $"{finding.Problem}: move it to {BackupNames.RetainedPath(RetentionPath, finding.RetentionFolder!, finding.RetentionName!)}"
                : $"{finding.Problem}: {finding.Action}";
            if (!ShouldProcess(what, action))
                continue;
            var activity = $"Repairing {what}";
            var progressId = ProgressIds.Repair;
            try
            {
                var result = Run(ct => service.FixAsync(finding, SnapshotName, RetentionPath,
                    percent => Sink.Progress(new ProgressUpdate(progressId, null, activity, $"{percent} %", percent)), ct));
                WriteObject(new RepairAction(domain, finding.Target, finding.Problem, finding.Action, result));
            }
            catch (BackupException ex)
            {
                commitFailed |= finding.Kind == RepairKind.CommitOverlay;
                WriteError(ToErrorRecord(new BackupException(ErrorIds.RepairFailed, ex.Category,
                    $"Could not repair {what} ({finding.Problem}): {ex.Message}", ex.RecommendedAction, domain, ex), domain));
            }
            finally
            {
                CompleteProgress(progressId, activity);
            }
        }
    }
}
