namespace OdaKvmBackup.Core.Steps;

/// <summary>
/// The order of the work on a VM's disks (a copy, a base's read-back): the smallest first, and the work on a disk
/// waits for that on the disks of its VM under a quarter of its size. A boot disk then leaves its overlay in about
/// its own read time instead of sharing the storage with a vdisk many times its size, which loses at most a
/// quarter of its own time; disks of like size still run together.
/// </summary>
internal static class SmallDisksFirst
{
    public const int Factor = 4;

    /// <summary>Starts the work of each item, the smallest first; <paramref name="start"/> gets what the item's work
    /// must wait for (the work started for the items under a quarter of its size) and returns the work. Returns all
    /// the work started.</summary>
    public static IReadOnlyList<Task> Start<T>(IEnumerable<T> items, Func<T, long> size, Func<T, Task, Task> start)
    {
        var started = new List<(long Size, Task Work)>();
        foreach (var item in items.OrderBy(size))
        {
            var mine = size(item);
            var before = Task.WhenAll(started.Where(s => s.Size <= mine / Factor).Select(s => s.Work));
            started.Add((mine, start(item, before)));
        }
        return started.Select(s => s.Work).ToList();
    }
}
