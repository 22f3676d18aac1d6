namespace OdaKvmBackup.Core.Run;

internal enum RepairKind { CommitOverlay, DeleteSnapshotMetadata, RemoveLeftoverOverlay, CloseJournal }

/// <summary>One thing left behind by an interrupted backup, and how it will be fixed. <see cref="Recorded"/> says
/// whether OdaKvmBackup's journal proves it made it: only then is it acted on unless the user asks explicitly
/// (the manual procedure this module replaces uses the same snapshot and overlay names).</summary>
internal sealed record RepairFinding(RepairKind Kind, string DomainName, string? Target, string Problem, string Action, bool Recorded,
    CommitTarget? Commit = null, string? LeftoverOverlay = null, string? RetentionFolder = null, string? RetentionName = null)
{
    /// <summary>What the finding is about, as the user reads it: "vda of linux_vm", or the domain.</summary>
    public string Subject => Target is null ? DomainName : $"{Target} of {DomainName}";
}

/// <summary>Whether Repair-KvmBackup acts on a finding: <see cref="LeftAloneWarning"/> is null when it does, and
/// otherwise says why it is left alone and how to include it.</summary>
internal sealed record RepairDecision(RepairFinding Finding, string? LeftAloneWarning)
{
    public bool Act => LeftAloneWarning is null;
}

/// <summary>
/// Finds what interrupted backups left and puts it right: disks back on their own files first, then metadata,
/// then files, then the journal. What the journal records is the module's own; anything else that looks like an
/// overlay (a backup run by hand) is only reported, unless the user includes it explicitly. A file still in a
/// backing chain is never moved or deleted. Each fix is a step of <see cref="RunCloser"/>, the way back a failing
/// run takes too: what is left here is finding what the journal does not record, and the gate for it.
/// </summary>
internal sealed class RepairService
{
    private readonly HostTools _tools;
    private readonly RunCloser _closer;
    private readonly Func<string, IBackupStore> _openStore;

    public RepairService(HostTools tools, CommitService commit, Func<string, IBackupStore> openStore)
    {
        _tools = tools;
        _closer = new RunCloser(tools, commit);
        _openStore = openStore;
    }

    private VirshClient Virsh => _tools.Virsh;

    /// <summary>The domains named, or every domain of the host and every domain with a journal.</summary>
    public async Task<IReadOnlyList<string>> DomainsToInspectAsync(IReadOnlyList<string>? names, CancellationToken ct) =>
        names is { Count: > 0 } ? names
            : (await Virsh.ListAllDomainsAsync(ct).ConfigureAwait(false)).Concat(RunJournal.Domains()).Distinct(StringComparer.Ordinal).ToList();

    public async Task<IReadOnlyList<RepairFinding>> InspectAsync(string domain, string snapshotName, CancellationToken ct)
    {
        BackupNames.RequireValidSnapshotName(snapshotName); // it names the overlays this repair moves and deletes
        var findings = new List<RepairFinding>();
        var journal = RunJournal.TryLoad(domain);
        var journalSnapshot = journal?.SnapshotName ?? snapshotName;
        var state = await Virsh.GetStateAsync(domain, ct).ConfigureAwait(false);
        var offline = state is "shut off" or "crashed";
        var description = DomainXml.Parse(await Virsh.DumpXmlAsync(domain, inactive: offline, ct).ConfigureAwait(false), state);

        foreach (var disk in description.Disks.Where(d => d.Source is not null && !d.ReadOnly))
        {
            var recorded = journal?.Disks.FirstOrDefault(d => d.Target == disk.Target && d.Overlay is not null);
            var job = offline ? null : await Virsh.GetBlockJobAsync(domain, disk.Target, ct).ConfigureAwait(false);
            var onRecordedOverlay = recorded is not null && (disk.Source == recorded.Overlay || job is not null && disk.Source == recorded.Source);
            var looksLikeOverlay = BackupNames.LooksLikeOverlay(disk.Source!, snapshotName) && disk.BackingChain.Count > 0;
            if (!onRecordedOverlay && !looksLikeOverlay)
                continue;
            CommitTarget target;
            if (onRecordedOverlay)
            {
                target = RunCloser.CommitTargetOf(domain, recorded!);
            }
            else
            {
                var baseFile = disk.BackingChain[0];
                // An overlay that does not say what is below it: ask qemu-img, never assume raw.
                var baseFormat = disk.BackingFormats.FirstOrDefault() is { Length: > 0 } f ? f
                    : (await _tools.QemuImg.InfoAsync(baseFile, ct).ConfigureAwait(false)).Format;
                target = new CommitTarget(domain, disk.Target, baseFile, baseFormat, disk.Source);
            }
            var problem = job is not null
                ? $"{disk.Target} has a leftover {job.Type} job ({job.Percent} %){(job.Ready ? ", ready to pivot" : "")}"
                : $"{disk.Target} still writes to the overlay {disk.Source}";
            if (!onRecordedOverlay)
                problem += " (OdaKvmBackup has no record of it: a backup by hand?)";
            var how = offline ? "commit the overlay offline with qemu-img and point the definition back at" : "commit and pivot back to";
            findings.Add(new RepairFinding(RepairKind.CommitOverlay, domain, disk.Target, problem, $"{how} {target.Source}", onRecordedOverlay, target));
        }

        if ((await Virsh.ListSnapshotNamesAsync(domain, ct).ConfigureAwait(false)).Contains(journalSnapshot, StringComparer.Ordinal))
        {
            var recorded = journal is not null && journal.Phase != RunPhase.Planned;
            findings.Add(new RepairFinding(RepairKind.DeleteSnapshotMetadata, domain, null,
                $"snapshot metadata '{journalSnapshot}' is left" + (recorded ? "" : " (OdaKvmBackup has no record of it)"),
                "delete the metadata only (snapshot-delete --metadata; no file is touched)", recorded));
        }

        // Overlay files that no disk uses: they block the next snapshot. The journal's are the run's own; files
        // beside the disks that are merely named like overlays are someone else's unless the user says otherwise.
        var committing = findings.Where(f => f.Commit?.Overlay is not null).Select(f => f.Commit!.Overlay!).ToHashSet(StringComparer.Ordinal);
        var inChains = description.Disks.SelectMany(d => new[] { d.Source }.Concat(d.BackingChain)).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var journalOverlays = journal is null ? [] : RunCloser.OverlaysLeft(journal).ToList();
        var files = new List<(string File, bool Recorded, string? Folder, string Name)>();
        foreach (var disk in journalOverlays)
            files.Add((disk.Overlay!, true, BackupNames.RetentionFolder(domain, journal!.RunId), disk.RetainedName ?? Path.GetFileName(disk.Overlay!)));
        var repairFolder = BackupNames.RepairFolder(domain, DateTime.UtcNow);
        var bases = description.Disks.Where(d => d.Source is not null)
            .Select(d => findings.FirstOrDefault(f => f.Target == d.Target && f.Commit is not null)?.Commit!.Source ?? d.Source!).ToList();
        var foreign = bases.Select(b => BackupNames.OverlayPath(domain, b, snapshotName, null))
            .Concat(committing)
            .Where(f => files.All(x => x.File != f)).Distinct(StringComparer.Ordinal).ToList();
        var foreignNames = BackupNames.RetainedNames(foreign.Select((f, i) => ($"f{i}", f)));
        files.AddRange(foreign.Select((f, i) => (f, false, (string?)repairFolder, foreignNames[$"f{i}"])));
        foreach (var (file, recorded, folder, name) in files.Where(f => File.Exists(f.File)))
        {
            if (inChains.Contains(file) && !committing.Contains(file))
                continue; // in use by something this repair does not commit: never touched
            findings.Add(new RepairFinding(RepairKind.RemoveLeftoverOverlay, domain, null,
                $"overlay {file} would block the next snapshot" + (recorded ? "" : " (OdaKvmBackup has no record of it)"),
                "move it to the retention folder, or delete it, once no disk uses it (its data is in the disk)", recorded,
                LeftoverOverlay: file, RetentionFolder: folder, RetentionName: name));
        }

        if (journal is not null)
        {
            findings.Add(new RepairFinding(RepairKind.CloseJournal, domain, null,
                $"the backup run {journal.RunId} (process {journal.ProcessId}) did not finish (phase {journal.Phase})",
                journal.SetFolder is null ? "close its journal" : $"close its journal and mark its set Incomplete unless all of it was copied and verified", true));
        }
        return findings;
    }

    /// <summary>The gate: what the journal records is acted on; what it does not (it may be a backup by hand, which
    /// uses the same names) only with <paramref name="includeUnrecorded"/>. One decision per finding, in their order.</summary>
    public static IReadOnlyList<RepairDecision> Decide(IReadOnlyList<RepairFinding> findings, bool includeUnrecorded) =>
        findings.Select(f => new RepairDecision(f, f.Recorded || includeUnrecorded ? null
            : $"{f.Subject}: {f.Problem}. Left alone: OdaKvmBackup acts only on what its journal records. If no backup by hand is running, run Repair-KvmBackup -DomainName {f.DomainName} -IncludeUnrecorded to {f.Action}."))
            .ToList();

    public async Task<string> FixAsync(RepairFinding finding, string snapshotName, string? retentionPath, Action<int>? percent, CancellationToken ct)
    {
        switch (finding.Kind)
        {
            case RepairKind.CommitOverlay:
                var outcome = await _closer.CommitBackAsync(finding.Commit!, percent, ct).ConfigureAwait(false);
                return outcome switch
                {
                    CommitOutcome.CommittedOffline => $"committed offline; {finding.Target} uses {finding.Commit!.Source} again",
                    CommitOutcome.PivotedLeftoverJob => $"pivoted the leftover job; {finding.Target} writes to {finding.Commit!.Source} again",
                    _ => $"committed; {finding.Target} writes to {finding.Commit!.Source} again",
                };
            case RepairKind.DeleteSnapshotMetadata:
                var name = RunJournal.TryLoad(finding.DomainName)?.SnapshotName ?? snapshotName;
                await _closer.DeleteSnapshotMetadataAsync(finding.DomainName, name, ct).ConfigureAwait(false);
                return "metadata deleted";
            case RepairKind.RemoveLeftoverOverlay when retentionPath is not null:
                var target = await _closer.RetainOverlayAsync(finding.DomainName, finding.LeftoverOverlay!, retentionPath, finding.RetentionFolder!, finding.RetentionName!, ct).ConfigureAwait(false);
                return $"moved to {target}";
            case RepairKind.RemoveLeftoverOverlay:
                await _closer.DiscardOverlayAsync(finding.LeftoverOverlay!, ct).ConfigureAwait(false);
                return "deleted";
            case RepairKind.CloseJournal:
                return await CloseJournalAsync(finding.DomainName, ct).ConfigureAwait(false);
            default:
                throw new ArgumentOutOfRangeException(nameof(finding));
        }
    }

    /// <summary>The run is over: its set gets the status the run itself gives it (<see cref="RunCloser.CloseSetAsync"/>:
    /// Complete when every disk was copied and verified, whatever failed after), then the journal goes.</summary>
    private async Task<string> CloseJournalAsync(string domain, CancellationToken ct)
    {
        var journal = RunJournal.TryLoad(domain);
        if (journal is null)
            return "journal closed";
        var note = "";
        if (journal.Destination is { } destination && journal.SetFolder is { } set)
        {
            await using var store = _openStore(destination);
            note = await RunCloser.CloseSetAsync(journal, store, set, ct).ConfigureAwait(false) switch
            {
                null => "",
                BackupSetStatus.Complete => $"; set {store.Describe(set)} marked Complete (every disk was copied and verified before the run stopped)",
                _ => $"; set {store.Describe(set)} marked Incomplete",
            };
        }
        RunCloser.CloseJournal(journal, somethingLeft: false);
        return "journal closed" + note;
    }
}
