using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.QemuImg;

namespace OdaKvmBackup.Core.Safety;

public enum RepairKind { CommitOverlay, DeleteSnapshotMetadata, RemoveLeftoverOverlay, CloseJournal }

/// <summary>One thing left behind by an interrupted backup, and how it will be fixed.</summary>
public sealed record RepairFinding(RepairKind Kind, string DomainName, string? Target, string Problem, string Action,
    CommitTarget? Commit = null, string? LeftoverOverlay = null);

/// <summary>
/// Finds what interrupted backups left (from the journal, and from the backing chains when the journal is gone)
/// and puts it right: disks back on their own files first, then metadata, then files. A file still in a
/// backing chain is never moved or deleted.
/// </summary>
public sealed class RepairService
{
    private readonly VirshClient _virsh;
    private readonly QemuImgClient _qemuImg;
    private readonly CommitService _commit;
    private readonly RetentionService _retention;

    public RepairService(VirshClient virsh, QemuImgClient qemuImg, CommitService commit, RetentionService retention)
    {
        _virsh = virsh;
        _qemuImg = qemuImg;
        _commit = commit;
        _retention = retention;
    }

    public async Task<IReadOnlyList<string>> DomainsToInspectAsync(IReadOnlyList<string>? names, CancellationToken ct) =>
        names is { Count: > 0 } ? names
            : (await _virsh.ListAllDomainsAsync(ct).ConfigureAwait(false)).Concat(Journal.LoadAll().Select(j => j.DomainName)).Distinct(StringComparer.Ordinal).ToList();

    public async Task<IReadOnlyList<RepairFinding>> InspectAsync(string domain, string snapshotName, string? retentionPath, CancellationToken ct)
    {
        var findings = new List<RepairFinding>();
        var journal = Journal.TryLoad(domain);
        var state = await _virsh.GetStateAsync(domain, ct).ConfigureAwait(false);
        var offline = state is "shut off" or "crashed";
        var description = DomainXml.Parse(await _virsh.DumpXmlAsync(domain, inactive: offline, ct).ConfigureAwait(false), state);

        foreach (var disk in description.Disks.Where(d => d.Source is not null && !d.ReadOnly))
        {
            var journalDisk = journal?.Disks.FirstOrDefault(d => d.Target == disk.Target);
            var ours = journalDisk?.Overlay == disk.Source || OverlayNaming.LooksLikeOurOverlay(disk.Source!, snapshotName);
            var job = offline ? null : await _virsh.GetBlockJobAsync(domain, disk.Target, ct).ConfigureAwait(false);
            if (!ours && !(job is not null && journalDisk is not null && disk.Source == journalDisk.Source))
                continue;
            if (disk.Source == journalDisk?.Source && job is null)
                continue; // already back on its own file
            var baseFile = journalDisk?.Source ?? disk.BackingChain.FirstOrDefault();
            var baseFormat = journalDisk?.Format ?? disk.BackingFormats.FirstOrDefault();
            if (baseFile is null || string.IsNullOrEmpty(baseFormat))
            {
                var info = await _qemuImg.InfoAsync(disk.Source!, ct).ConfigureAwait(false);
                baseFile ??= info.BackingFile;
                baseFormat = string.IsNullOrEmpty(baseFormat) ? info.BackingFormat ?? "raw" : baseFormat;
            }
            if (baseFile is null)
                continue; // named like an overlay but has no backing file: not ours to touch
            var overlay = journalDisk?.Overlay ?? disk.Source!;
            var problem = job is not null
                ? $"{disk.Target} has a leftover {job.Type} job ({job.Percent} %){(job.Ready ? ", ready to pivot" : "")}"
                : $"{disk.Target} still writes to the overlay {disk.Source}";
            var how = offline ? "commit the overlay offline with qemu-img and point the definition back at" : "commit and pivot back to";
            findings.Add(new RepairFinding(RepairKind.CommitOverlay, domain, disk.Target, problem,
                $"{how} {baseFile}", new CommitTarget(domain, disk.Target, baseFile, baseFormat!, overlay)));
        }

        if ((await _virsh.ListSnapshotNamesAsync(domain, ct).ConfigureAwait(false)).Contains(snapshotName, StringComparer.Ordinal))
        {
            findings.Add(new RepairFinding(RepairKind.DeleteSnapshotMetadata, domain, null,
                $"snapshot metadata '{snapshotName}' is left", "delete the metadata only (snapshot-delete --metadata; no file is touched)"));
        }

        // Overlays of interrupted runs: the ones committed above, and files left beside the disks that no chain
        // uses. They block the next snapshot; their data is in the disks (checked again just before each goes).
        var committing = findings.Where(f => f.Commit?.Overlay is not null).Select(f => f.Commit!.Overlay!).ToHashSet(StringComparer.Ordinal);
        var inChains = description.Disks.SelectMany(d => new[] { d.Source }.Concat(d.BackingChain)).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var bases = description.Disks.Where(d => d.Source is not null)
            .Select(d => findings.FirstOrDefault(f => f.Target == d.Target && f.Commit is not null)?.Commit!.Source ?? d.Source!).ToList();
        var candidates = bases.Select(b => OverlayNaming.OverlayPath(domain, b, snapshotName, null))
            .Concat(journal?.Disks.Select(d => d.Overlay).OfType<string>() ?? [])
            .Concat(committing)
            .Distinct(StringComparer.Ordinal);
        foreach (var file in candidates.Where(File.Exists))
        {
            if (inChains.Contains(file) && !committing.Contains(file))
                continue; // in use by something this repair does not commit: never touched
            var action = retentionPath is null
                ? "delete it once no disk uses it (its data is in the disk; -RetentionPath keeps it instead)"
                : $"move it to {Path.Combine(retentionPath, domain, "repaired")} once no disk uses it";
            findings.Add(new RepairFinding(RepairKind.RemoveLeftoverOverlay, domain, null,
                $"overlay {file} of an interrupted backup would block the next snapshot", action, LeftoverOverlay: file));
        }

        if (journal is not null)
        {
            findings.Add(new RepairFinding(RepairKind.CloseJournal, domain, null,
                $"the backup run {journal.RunId} (process {journal.ProcessId}) did not finish",
                journal.BackupSet is null ? "close its journal" : $"close its journal and mark {journal.BackupSet} Incomplete unless all of it was copied"));
        }
        return findings;
    }

    public async Task<string> FixAsync(RepairFinding finding, string snapshotName, string? retentionPath, Action<int>? percent, CancellationToken ct)
    {
        switch (finding.Kind)
        {
            case RepairKind.CommitOverlay:
                var outcome = await _commit.CommitAsync(finding.Commit!, 0, percent, ct).ConfigureAwait(false);
                return outcome switch
                {
                    CommitOutcome.CommittedOffline => $"committed offline; {finding.Target} uses {finding.Commit!.Source} again",
                    CommitOutcome.PivotedLeftoverJob => $"pivoted the leftover job; {finding.Target} writes to {finding.Commit!.Source} again",
                    _ => $"committed; {finding.Target} writes to {finding.Commit!.Source} again",
                };
            case RepairKind.DeleteSnapshotMetadata:
                await _virsh.DeleteSnapshotMetadataAsync(finding.DomainName, snapshotName, ct).ConfigureAwait(false);
                return "metadata deleted";
            case RepairKind.RemoveLeftoverOverlay when retentionPath is not null:
                var target = await _retention.MoveAsync(finding.DomainName, "repaired", finding.LeftoverOverlay!, retentionPath, ct).ConfigureAwait(false);
                return $"moved to {target}";
            case RepairKind.RemoveLeftoverOverlay:
                await _retention.DiscardAsync(finding.LeftoverOverlay!, ct).ConfigureAwait(false);
                return "deleted";
            case RepairKind.CloseJournal:
                var journal = Journal.TryLoad(finding.DomainName);
                if (journal?.BackupSet is { } set && Directory.Exists(set))
                {
                    BackupSet.MarkIncomplete(set, $"run {journal.RunId} was interrupted; closed by Repair-KvmBackup");
                    foreach (var partial in Directory.EnumerateFiles(set, "*.partial"))
                        File.Delete(partial); // a copy cut short: never a usable file
                }
                if (BackupRun.FindActive(finding.DomainName) is { } run)
                    run.Finish();
                else
                    Journal.Delete(finding.DomainName);
                return "journal closed";
            default:
                throw new ArgumentOutOfRangeException(nameof(finding));
        }
    }

}
