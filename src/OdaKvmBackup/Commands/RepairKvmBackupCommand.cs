using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Recovery after a killed process or a host reboot: puts domains left on this module's overlays back on their
/// own disks, pivots leftover jobs, clears leftover metadata and closes the interrupted run's journal.
/// </summary>
[Cmdlet(VerbsDiagnostic.Repair, "KvmBackup", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(RepairAction))]
public sealed class RepairKvmBackupCommand : KvmCmdlet
{
    private const int ProgressId = 61;
    private readonly List<string> _names = new();

    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name", "Domain")]
    public string[]? DomainName { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string SnapshotName { get; set; } = OverlayNaming.DefaultSnapshotName;

    /// <summary>Where leftover overlays that no disk uses any more are moved; without it they stay where they are.</summary>
    [Parameter]
    public string? RetentionPath { get; set; }

    protected override void BeginProcessing()
    {
        if (RetentionPath is not null)
            RetentionPath = ResolveWritableFolder(RetentionPath, nameof(RetentionPath));
    }

    protected override void ProcessRecord()
    {
        foreach (var name in DomainName ?? [])
        {
            if (string.IsNullOrWhiteSpace(name))
            {
                WriteError(ToErrorRecord(ErrorIds.InvalidDomainName, BackupErrorCategory.InvalidArgument,
                    "A domain name is empty or blank.", "Name a domain as 'virsh list --all' shows it, or give none to check every domain.", name));
                continue;
            }
            if (!_names.Contains(name, StringComparer.Ordinal))
                _names.Add(name); // piped Get-VmDisk output names each domain once per disk
        }
    }

    protected override void EndProcessing()
    {
        if (DomainName is not null && _names.Count == 0)
            return; // only blank names were given: each was reported
        var virsh = Virsh;
        var service = new RepairService(virsh, QemuImg, NewCommitService(), new RetentionService(virsh));
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
        var active = BackupRun.FindActive(domain);
        using var domainLock = DomainLock.TryAcquire(domain);
        if (domainLock is null && (active is null || active.OwnedByRunningPipeline))
        {
            WriteError(ToErrorRecord(SnapshotService.BackupInProgress(domain), domain));
            return;
        }
        IReadOnlyList<RepairFinding> findings;
        try
        {
            findings = Run(ct => service.InspectAsync(domain, SnapshotName, RetentionPath, ct));
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
        foreach (var finding in findings)
        {
            var what = finding.Target is null ? domain : $"{finding.Target} of {domain}";
            if (finding.Kind == RepairKind.CloseJournal && commitFailed)
                continue; // the journal is the record of what is still on overlays: keep it
            if (!ShouldProcess(what, $"{finding.Problem}: {finding.Action}"))
                continue;
            var activity = $"Repairing {what}";
            try
            {
                var result = Run(ct => service.FixAsync(finding, SnapshotName, RetentionPath,
                    percent => Sink.Progress(new ProgressUpdate(ProgressId, null, activity, $"{percent} %", percent)), ct));
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
                CompleteProgress(ProgressId, activity);
            }
        }
    }
}
