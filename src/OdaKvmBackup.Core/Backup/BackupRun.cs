using System.Collections.Concurrent;
using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.Core.Backup;

/// <summary>
/// One domain's backup in this process, from its snapshot until every disk is committed back. It holds the
/// domain lock and keeps the journal current; the objects of all its disks point at it.
/// </summary>
public sealed class BackupRun
{
    private static readonly ConcurrentDictionary<string, BackupRun> ActiveRuns = new(StringComparer.Ordinal);
    private readonly object _gate = new();
    private readonly HashSet<string> _copied = new(StringComparer.Ordinal);
    private DomainLock? _lock;

    public BackupRun(JournalEntry journal, string inactiveXml, DomainLock? domainLock)
    {
        Journal = journal;
        InactiveXml = inactiveXml;
        _lock = domainLock;
    }

    public JournalEntry Journal { get; }
    public string DomainName => Journal.DomainName;
    public string RunId => Journal.RunId;
    public BackupConsistency Consistency => Journal.Consistency;
    /// <summary>The domain definition as it was before the snapshot (pointing at the disks' own files).</summary>
    public string InactiveXml { get; }
    /// <summary>The backup set folder, once Copy-VmDisk has made it.</summary>
    public string? BackupSet { get; set; }
    /// <summary>True while the pipeline that made the snapshot runs: it puts the VM back if that pipeline fails.</summary>
    public bool OwnedByRunningPipeline { get; set; } = true;
    public bool Finished { get; private set; }

    /// <summary>True while some disk of this run may still write to an overlay.</summary>
    public bool OnOverlays
    {
        get { lock (_gate) return !Finished && Consistency != BackupConsistency.Cold && Journal.Disks.Any(d => !d.Committed); }
    }

    public IReadOnlyList<string> Targets => Journal.Disks.Select(d => d.Target).ToList();

    public static BackupRun? FindActive(string domain) => ActiveRuns.TryGetValue(domain, out var run) ? run : null;

    public void Register() => ActiveRuns[DomainName] = this;

    /// <summary>Returns true when every disk of the run has now been copied.</summary>
    public bool MarkCopied(string target)
    {
        lock (_gate)
        {
            _copied.Add(target);
            return Journal.Disks.All(d => _copied.Contains(d.Target));
        }
    }

    public void SetPhase(string phase)
    {
        lock (_gate)
        {
            if (Finished)
                return;
            Journal.Phase = phase;
            Safety.Journal.Save(Journal);
        }
    }

    /// <summary>Records that a disk writes to its own file again; the last one ends the run.</summary>
    public void MarkCommitted(string target)
    {
        lock (_gate)
        {
            foreach (var disk in Journal.Disks.Where(d => d.Target == target))
                disk.Committed = true;
            if (Journal.Disks.All(d => d.Committed))
                FinishLocked();
            else if (!Finished)
                Safety.Journal.Save(Journal);
        }
    }

    /// <summary>Ends the run: no overlay left in use, so the journal goes and the domain is free again.</summary>
    public void Finish()
    {
        lock (_gate)
            FinishLocked();
    }

    private void FinishLocked()
    {
        if (Finished)
            return;
        Finished = true;
        try
        {
            Safety.Journal.Delete(DomainName);
        }
        finally
        {
            ActiveRuns.TryRemove(new KeyValuePair<string, BackupRun>(DomainName, this));
            _lock?.Dispose();
            _lock = null;
        }
    }
}
