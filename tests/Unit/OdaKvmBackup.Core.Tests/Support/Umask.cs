using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// Sets the process umask for the length of a using block, then puts the old one back. umask 000 is the worst
/// case for a backup tool: every file and folder made without an explicit mode would be world-readable.
/// The umask is process-wide and test classes run in parallel: one block at a time (across threads, since the
/// block may await), so that each restores what was there before it.
/// </summary>
internal static partial class Umask
{
    private static readonly SemaphoreSlim OneAtATime = new(1, 1);

    public static IDisposable Set(int mask)
    {
        if (!OneAtATime.Wait(TimeSpan.FromSeconds(30)))
            throw new TimeoutException("another test kept the umask for 30 s");
        var previous = NativeUmask((uint)mask);
        return new Restore(previous);
    }

    private sealed class Restore(uint previous) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 1)
                return;
            NativeUmask(previous);
            OneAtATime.Release();
        }
    }

    [LibraryImport("libc", EntryPoint = "umask")]
    private static partial uint NativeUmask(uint mask);
}
