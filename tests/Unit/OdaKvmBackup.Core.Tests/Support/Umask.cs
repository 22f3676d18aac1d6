using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// Sets the process umask for the length of a using block, then puts the old one back. umask 000 is the worst
/// case for a backup tool: every file and folder made without an explicit mode would be world-readable.
/// The umask is process-wide, so only tests that check modes the code sets explicitly should use it.
/// </summary>
internal static partial class Umask
{
    public static IDisposable Set(int mask)
    {
        var previous = NativeUmask((uint)mask);
        return new Restore(previous);
    }

    private sealed class Restore(uint previous) : IDisposable
    {
        public void Dispose() => NativeUmask(previous);
    }

    [LibraryImport("libc", EntryPoint = "umask")]
    private static partial uint NativeUmask(uint mask);
}
